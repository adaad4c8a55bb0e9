from acdistill.cli import app

app(prog_name="acdistill")
