"""Support code of the book's chapters (the notebooks call it, explain it and plot it).

``notebook`` (parameter checks every notebook runs first), ``claims`` (claims with margins and
hold rates), ``taylor`` and ``authors_code`` (chapter 1), ``spectrum`` (chapter 2),
``collapse`` (chapter 3). Chapter 4 uses :mod:`fts_core.experiments` directly. A new
chapter's helpers go in a new module here.
"""
