"""Node file1.py of the diamond example: prepares the input."""
import os

print("file1.py prepares the input (pid %d)" % os.getpid())
with open("result.txt", "a") as f:
    f.write("file1.py\n")
