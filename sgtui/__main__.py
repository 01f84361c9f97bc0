"""`python -m sgtui`: the same command as the `sgtui` script (for an environment without its bin/ on PATH)."""

from sgtui.cli import main

if __name__ == "__main__":
    main()
