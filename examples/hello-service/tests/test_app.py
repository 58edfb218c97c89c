import unittest

from hello.app import greeting


class GreetingTest(unittest.TestCase):
    def test_default(self) -> None:
        self.assertEqual(greeting(), "Hello, world!")

    def test_name(self) -> None:
        self.assertEqual(greeting("Conveyor"), "Hello, Conveyor!")


if __name__ == "__main__":
    unittest.main()
