"""choral's command line: thin typer commands, one module per stage."""
