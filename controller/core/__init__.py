"""The pure core: schemas, declarations, merge rules and rendering.

Nothing in this package does I/O. It takes already-read schema documents and
object bodies and returns frozen results; the file and cluster adapters read,
write and watch around it.
"""
