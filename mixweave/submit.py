"""Entry file for ``spark-submit`` (which needs a ``.py`` path, not a console script).

    spark-submit --master yarn "$(python -m mixweave.submit --path)" run configs/demo.yaml

Under spark-submit the session spark-submit created is reused, so its ``--master`` wins over the
config's ``spark.master``.
"""

import os
import sys

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        sys.path.pop(0)  # run as a file: do not expose the package's modules as top-level names
    if sys.argv[1:] == ["--path"]:
        print(os.path.abspath(__file__))
        sys.exit(0)
    from mixweave.cli import console_main

    console_main()  # main() on sys.argv[1:], then gc.freeze() before the exit
