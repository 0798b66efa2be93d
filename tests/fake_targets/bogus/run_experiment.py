"""A fake trial entry point that writes whatever result JSON $FAKE_RESULT holds (signed with the
trial's real token when $FAKE_SIGN is set, then changed per $FAKE_TAMPER), prints a convincing
block, and exits with $FAKE_EXIT: the trial stage must trust none of it blindly."""
import os
import sys

from targets.harness.result import parse_json, sign

token = sys.stdin.readline().strip() if "--token-stdin" in sys.argv else ""
path = sys.argv[sys.argv.index("--result-json") + 1]
text = os.environ["FAKE_RESULT"]
if os.environ.get("FAKE_SIGN"):
    text = sign(parse_json(text), token)
if os.environ.get("FAKE_TAMPER"):              # "old|new": a change made after the runner signed
    old, new = os.environ["FAKE_TAMPER"].split("|")
    text = text.replace(old, new)
with open(path, "w") as fh:
    fh.write(text)
print("---\nexit_code: 0\ncorrectness: pass\nspeedup_geomean: 9.9\n---")
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
