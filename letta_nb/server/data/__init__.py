"""Datasets shipped with letta_nb for the offline demo brain (``letta_nb/demo``).

``coffee_sales.csv`` (720 rows, 2024-01-01 .. 2024-12-31, sorted by date, store, product): daily
sales of one product at one store of a fictional six-store coffee chain. It was generated once
with a fixed seed and is committed as data, so every tool answer computed from it is stable.
It has real structure to find: iced drinks peak in summer, coffee beans in November-December,
revenue grows through the year, the Airport store charges more and sells most but is rated
lowest, and busy product-days get lower ratings (units vs customer_rating r ≈ -0.41).

Columns:

* ``date`` (YYYY-MM-DD): the sales day.
* ``store``: Downtown, Old Town, Campus, Riverside, Airport, Harbor.
* ``region``: Central (Downtown, Old Town), North (Campus, Riverside), East (Airport, Harbor).
* ``product``: one of 12 items, e.g. Latte, Cold Brew, Croissant, Coffee Beans 250g.
* ``category``: Coffee, Tea, Bakery, Merch.
* ``units`` (int): items sold that day.
* ``unit_price`` (float, USD): the price charged that day (store markups, ~12% of days on promo).
* ``revenue`` (float, USD): units x unit_price.
* ``customer_rating`` (float, 1.0-5.0): mean customer rating for that product that day.
"""

COFFEE_SALES = "coffee_sales.csv"
