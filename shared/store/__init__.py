"""Arrays in Redis: the wire format of an array (:mod:`.codec`), blobs with a lifetime and their consumers
(:mod:`.blobs`), and a client that rides out a short outage (:mod:`.client`).
"""
