"""What the tests share: project set-up, dataset writers, servers, and how code is read."""
