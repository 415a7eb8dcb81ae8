# Generates orders-2000-2013.csv (beside this script): the recorded order stream of the golden test
# and the demo. Run: python3 data/gen_orders.py. Quantities are chosen from prices here, but the
# system itself reads only the CSV, as exact decimals.
import os
HERE = os.path.dirname(os.path.abspath(__file__))
import csv, collections
rows = list(csv.DictReader(open(os.path.join(HERE, 'stocks-2000-2013.csv'))))
days = sorted({r['time'] for r in rows})
by_day = collections.defaultdict(dict)
for r in rows: by_day[r['time']][r['symbol']] = r
orders = []  # (time, user, side, symbol, qty)
def first_days_of_month():
    seen = set()
    for d in days:
        if d[:7] not in seen:
            seen.add(d[:7]); yield d
months = list(first_days_of_month())
# bob: monthly dollar-cost averaging into MSFT, ~1000 per month; sells a quarter every December.
held = 0
for d in months:
    p = float(by_day[d]['MSFT']['close']) if 'MSFT' in by_day[d] else None
    if p:
        q = max(1, int(1000 // p)); orders.append((d, 'bob', 'buy', 'MSFT', str(q))); held += q
        if d[5:7] == '12' and held >= 4:
            s = held // 4; orders.append((d, 'bob', 'sell', 'MSFT', str(s))); held -= s
# alice: buys 25 AAPL each January, sells 40 every July of odd years (sometimes more than held).
for d in months:
    if d[5:7] == '01': orders.append((d, 'alice', 'buy', 'AAPL', '25'))
    if d[5:7] == '07' and int(d[:4]) % 2 == 1: orders.append((d, 'alice', 'sell', 'AAPL', '40'))
# carol: fractional quarterly trades in GOOG and IBM, sells and buys in the same interval
# (the sell is queued first, so it funds the buy).
for i, d in enumerate(months):
    if i % 3 == 0:
        orders.append((d, 'carol', 'buy', 'IBM', '7.5'))
        if i % 6 == 0 and i > 0:
            orders.append((d, 'carol', 'sell', 'IBM', '3.25'))
            orders.append((d, 'carol', 'buy', 'GOOG', '0.125'))
# dave: wants FB before it lists (no price), then buys it in 2012.
for d in months:
    if d.startswith('2010') or d.startswith('2011-0'): orders.append((d, 'dave', 'buy', 'FB', '10'))
    if d.startswith('2012-0') and d >= '2012-06': orders.append((d, 'dave', 'buy', 'FB', '100'))
    if d.startswith('2013'): orders.append((d, 'dave', 'sell', 'FB', '50'))
    if d.startswith('2004-1'): orders.append((d, 'dave', 'buy', 'IBM', '100'))
# erin: every kind of mistake, a few times each, plus a real trade.
mistakes = [('buy', 'TSLA', '1'), ('buy', 'AAPL', '0'), ('sell', 'IBM', '5'),
            ('buy', 'GOOG', '1000000'), ('buy', 'AAPL', '2000000000'), ('buy', 'GOOG', '999999999'),
            ('buy', 'IBM', '0.00000001'), ('sell', 'IBM', '0.00000001')]
for i, d in enumerate(months[::13]):
    side, sym, q = mistakes[i % len(mistakes)]
    orders.append((d, 'erin', side, sym, q))
orders.sort(key=lambda o: o[0])  # stable: keeps per-day generation order
with open(os.path.join(HERE, 'orders-2000-2013.csv'), 'w') as f:
    f.write('time,username,side,symbol,qty\n')
    for o in orders: f.write(','.join(o) + '\n')
print(len(orders))
