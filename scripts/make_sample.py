"""Build the embedded demo set: the first 100 test images of each CIFAR-10 class.

Copies the JPEG bytes unchanged from the CIFAR-10 JPEG mirror's test.zip into
shared/images/assets/cifar10-test-sample.zip (about 1 MB).

    python scripts/make_sample.py ../shared/datasets/cifar10-jpeg/test.zip
"""

import sys
import zipfile
from pathlib import Path

PER_CLASS = 100
OUT = Path(__file__).resolve().parent.parent / "shared" / "images" / "assets" / "cifar10-test-sample.zip"


def main(test_zip: str) -> None:
    with zipfile.ZipFile(test_zip) as src:
        names = sorted(n for n in src.namelist() if n.endswith(".jpg"))
        by_class: dict[str, list[str]] = {}
        for name in names:
            by_class.setdefault(name.split("/")[0], []).append(name)
        with zipfile.ZipFile(OUT, "w", zipfile.ZIP_STORED) as dst:
            for cls in sorted(by_class):
                for name in by_class[cls][:PER_CLASS]:
                    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))  # reproducible bytes
                    dst.writestr(info, src.read(name))
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main(sys.argv[1])
