"""Print pyproject.toml's dependencies, plus those of the extras named on the command line, one
per line: the images' pip input (installed before the sources are copied, so that layer
survives source edits)."""

import sys
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = list(project["dependencies"])
for extra in sys.argv[1:]:
    deps += project["optional-dependencies"][extra]
print("\n".join(deps))
