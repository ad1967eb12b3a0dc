"""choral's stages and what they share: no printing and no command-line parsing here.

One module or package per stage (prepare, decode, group, graph, tune, propagate,
export, evaluate) and :mod:`.run` to chain them; ARCHITECTURE.md draws the layers,
the stage contract and where to add a teacher backend, a graph metric or an export format.
"""
