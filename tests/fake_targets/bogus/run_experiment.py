"""A fake trial entry point that writes whatever result JSON $FAKE_RESULT holds (with the
trial's real token wherever it says TOKEN), prints a convincing block, and exits with
$FAKE_EXIT: the trial stage must trust none of it blindly."""
import os
import sys

token = sys.stdin.readline().strip() if "--token-stdin" in sys.argv else ""
path = sys.argv[sys.argv.index("--result-json") + 1]
with open(path, "w") as fh:
    fh.write(os.environ["FAKE_RESULT"].replace("TOKEN", token))
print("---\nexit_code: 0\ncorrectness: pass\nspeedup_geomean: 9.9\n---")
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
