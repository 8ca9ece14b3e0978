"""The GLIPv2 web demo: every task of one checkpoint on one Gradio page (logic in `tasks/app.py`).

    python scripts/app.py [--model demo_output/model | --model me/glipv2-demo] [--host 127.0.0.1] [--port 7860]
        [--share] [--device cuda:0] [--trust-remote-code]

Tabs: open-vocabulary detection, phrase grounding, visual question answering, captioning, zero-shot classification,
instance segmentation and referring segmentation; a task the checkpoint cannot serve says why.
"""

from __future__ import annotations

import sys

from tasks.app import main

if __name__ == "__main__":
    sys.exit(main())
