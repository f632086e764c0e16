"""Every file format of vsml-es in one place, all written atomically and read without pickle.

``atomic``: the write-then-rename discipline. ``params``: named arrays + JSON metadata in one
npz (a run's ``params.npz``, the ``.vsml`` learner file). ``checkpoint``: resumable, verified
checkpoints. ``learner_file``: the ``.vsml`` format (docs/vsml-file-format.md).
"""
