"""`python -m kinesis_processor wit`: where the WIT this SDK builds against is."""
import os
import sys

if sys.argv[1:] == ["wit"]:
    print(os.path.join(os.path.dirname(os.path.abspath(__file__)), "wit"))
else:
    sys.exit("usage: python -m kinesis_processor wit")
