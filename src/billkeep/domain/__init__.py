"""The pure domain layer: values, rules and state machines. No I/O, no framework imports."""
