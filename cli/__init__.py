"""choral's command line: thin typer commands (one module per command) over :mod:`choral.pipeline`.

:mod:`.app` assembles them; :mod:`.common`, :mod:`.logs` and :mod:`.report` hold what
several commands share. ARCHITECTURE.md draws the whole package.
"""
