"""Reading images from anywhere: folders, zips, npz array sets and single files, streamed item by item
(:mod:`.intake`, :mod:`.members`, :mod:`.zips`, :mod:`.arrays`), decoded to RGB arrays (:mod:`.decode`),
gathered into labelled sets (:mod:`.load`, :mod:`.image_set`), and re-encoded as other sources would
(:mod:`.encodings`). Nothing here imports torch at import time.
"""
