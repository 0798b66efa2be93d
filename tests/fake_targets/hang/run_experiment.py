"""A fake trial entry point that hangs with a child process: exercises the outer kill."""
import subprocess
import sys
import time

subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # hang_target child"])
time.sleep(600)
