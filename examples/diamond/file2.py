"""Node file2.py of the diamond example: processes the left branch."""
import os
import time

time.sleep(0.5)  # runs at the same time as file3.py
print("file2.py processes the left branch (pid %d)" % os.getpid())
with open("result.txt", "a") as f:
    f.write("file2.py\n")
