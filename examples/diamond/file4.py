"""Node file4.py of the diamond example: joins both branches."""
import os

print("file4.py joins both branches (pid %d)" % os.getpid())
with open("result.txt", "a") as f:
    f.write("file4.py\n")
