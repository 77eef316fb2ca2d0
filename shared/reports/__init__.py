"""Reports people look at: matplotlib charts, image sheets and HTML pages that open from disk.

Nothing here is imported by the pipeline itself: matplotlib loads only when a
report is drawn, and every page works from ``file://`` with no network request.
"""
