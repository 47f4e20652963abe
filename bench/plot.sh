#!/usr/bin/env bash
# Draws the benchmark results: throughput against failure rate, the cost of
# one failed job broken down, failing jobs against Go's defer/recover pool,
# and HTTP submits by I/O threads. Needs gnuplot (Debian gnuplot-nox).
#   bench/plot.sh bench/results/latest.json
set -euo pipefail
json=${1:-bench/results/latest.json}
base=${json%.json}
for f in "$base.throughput.dat" "$base.failure.dat"; do
  [[ -f $f ]] || { echo "plot.sh: $f missing; run bulwark_bench first" >&2; exit 1; }
done
columns=$(head -1 "$base.throughput.dat" | wc -w)
gnuplot <<GP
set terminal pngcairo size 900,540 noenhanced
set output "$base.throughput.png"
set title "Throughput against failure rate (2 workers, 1 producer)"
set xlabel "failing jobs (%)"
set ylabel "jobs per second"
set logscale y
set key outside right
set grid
plot for [i=2:$columns] "$base.throughput.dat" using 1:i with linespoints lw 2 title columnheader(i)
set output "$base.failure.png"
unset logscale y
set title "Cost of one failed job, by throw depth (capture on)"
set xlabel "throw depth (frames)"
set ylabel "nanoseconds"
set style data histograms
set style histogram rowstacked
set style fill solid 0.8 border -1
set boxwidth 0.6
plot "$base.failure.dat" using 2:xtic(1) title "floor: throw + catch", '' using 3 title "trace capture", '' using 4 title "bulwark bookkeeping"
GP
plots="$base.throughput.png $base.failure.png"
if [[ -f $base.go.dat ]]; then
  gnuplot <<GP
set terminal pngcairo size 900,540 noenhanced
set output "$base.go.png"
set title "One failing job on one worker: bulwark against Go's defer/recover pool"
set xlabel "throw / panic depth (frames)"
set ylabel "microseconds per job (log)"
set logscale y
set style data histograms
set style histogram clustered
set style fill solid 0.8 border -1
set key outside right
set grid y
plot for [i=2:5] "$base.go.dat" using i:xtic(1) title columnheader(i)
GP
  plots+=" $base.go.png"
fi
if [[ -f $base.http.dat ]]; then
  gnuplot <<GP
set terminal pngcairo size 700,480 noenhanced
set output "$base.http.png"
set title "HTTP at 64 connections (wrk): one I/O thread against the default"
set ylabel "requests per second"
set style data histograms
set style histogram clustered
set style fill solid 0.8 border -1
set key outside right
set grid y
set yrange [0:*]
plot for [i=2:3] "$base.http.dat" using i:xtic(1) title columnheader(i)
GP
  plots+=" $base.http.png"
fi
echo "plots: $plots"
