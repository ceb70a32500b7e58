"""What the image workers' fork server imports before it forks any worker (:mod:`crawler.workers`).

Importing this module is the preload: the image code, simplejpeg and OpenCV where they are
installed (:func:`crawler.imageproc.fast_codecs`); the pHash is numpy's (common.phash), so
neither imagehash nor scipy is imported. It then freezes the garbage collector's view
of everything imported (``gc.freeze``), as Python's documentation advises for a parent that
forks without exec: collections in the workers never walk (and so never copy-on-write) the
pages they share with the server, and the server's own exit does not walk them either.
The workers forked from the server also get the crawl process's larger young generation
(``crawler.workers.GC_THRESHOLD``; spawned workers, where there is no fork server, keep
Python's defaults). Only the fork server imports it.
"""

import gc

from crawler import imageproc

imageproc.fast_codecs()

from crawler.workers import GC_THRESHOLD  # noqa: E402

gc.freeze()
gc.set_threshold(*GC_THRESHOLD)
