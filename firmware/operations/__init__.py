"""The box's application layer: the rules every face (API, CSC, console, CLI, provisioning) calls.

Configuration writes, the live signing service and its hot swap, the key life cycle, and the
queries the console and the command line show live here once; the faces call them and never
restate them.
"""
