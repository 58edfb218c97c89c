"""Deploy targets: process (built in, blue-green behind a proxy), container, ssh, command, and
third-party targets through the ``conveyor.targets`` entry-point group."""
