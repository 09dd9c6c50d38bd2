# fts-book: two commands do everything.
#   make book   -> set up, execute the notebooks at their defaults, build the Jupyter Book
#   make test   -> set up, run unit tests + notebooks (nbval) + the book build and browser checks
# Maintainers: make notebooks re-executes the tracked notebooks in place (their stored outputs).
.PHONY: book test setup clean notebooks

book:
	bash scripts/book.sh

test:
	bash scripts/test.sh

setup:
	bash scripts/setup.sh

notebooks:
	bash scripts/execute_notebooks.sh

clean:
	rm -rf _build .pytest_cache
