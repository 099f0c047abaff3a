"""The online scorer: loads the @champion of each family, retrieves, ranks, and logs what it decided."""
