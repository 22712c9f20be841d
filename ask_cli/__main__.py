from ask_cli.cli import app

app(prog_name="ask")
