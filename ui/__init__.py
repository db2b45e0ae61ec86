"""User interfaces: the Gradio web app and the typer CLI; thin layers over the other packages."""
