"""Node file3.py of the diamond example: processes the right branch."""
import os
import time

time.sleep(0.5)  # runs at the same time as file2.py
print("file3.py processes the right branch (pid %d)" % os.getpid())
with open("result.txt", "a") as f:
    f.write("file3.py\n")
