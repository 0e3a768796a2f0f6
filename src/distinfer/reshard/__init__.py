"""Checkpoint resharding: per-rank (or unified) checkpoint files in one layout -> blocks or files in another.

The engine sits beside the runtime (floor 4.5 of ``docs/architecture.md``): it never imports the
executor, Cells or ``serialization``, and they never import it. Its modules, each importing only
those above it in this list:

* :mod:`.planning`: strategies (:class:`~.planning.TrainStrategy`) and read plans: which source
  rank supplies each piece of a destination block (MindSpore's replica choice), pieces cut into
  read-sized chunks, ``rank_list_for_transform``'s rule. No file is opened here.
* :mod:`.discovery`: which file of each ``rank_<r>/`` directory is a rank's.
* :mod:`.sources`: the source sets behind one protocol (rank files, routed, renamed, unified
  directories), opened and checked in one place (:func:`~.sources.open_source`), and the
  streaming of many blocks. The ranged reads and their cost model are in :mod:`distinfer.io.ranged`.
* :mod:`.writing`: the one rank-file writer (:func:`~.writing.write_file`) and the one fan-out of
  an output set over processes or MPI ranks (:func:`~.writing.fan_out`): every file the engine
  writes is written there.
* :mod:`.targets`: what each destination gets (destination and predict strategies) and the
  output sets of the transforms, of ``unified_safetensors`` and of slicing a unified directory.
* :mod:`.loading`: blocks for a network's parameters (duck-typed: ``parameters_and_names()``).
* :mod:`.api` (floor 5): MindSpore's function names, thin facades that validate arguments; also
  exported by ``distinfer.parallel`` and ``distinfer``.
"""
