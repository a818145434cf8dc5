"""The media plane: the audio of every call, apart from the call core.

The call core (platform/) keeps call state in the store and decides; this package carries sound. It
knows nothing of transactions: the platform hands it commands after a commit, and it reports what it
heard (speech recognised, a stream that failed) through a narrow callback the node wires in.
"""
