# fts-book: two commands do everything.
#   make book   -> set up, execute the notebooks at their defaults, build the Jupyter Book
#   make test   -> set up, run unit tests + notebooks (nbval) + the book build and browser checks
.PHONY: book test setup clean

book:
	bash scripts/book.sh

test:
	bash scripts/test.sh

setup:
	bash scripts/setup.sh

clean:
	rm -rf _build .pytest_cache
