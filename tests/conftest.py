import sys
from pathlib import Path

# Test helpers (envfactory, editor_standin) are plain modules next to the tests.
sys.path.insert(0, str(Path(__file__).parent))
