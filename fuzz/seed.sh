#!/bin/sh
# Fills fuzz/corpus/<target>/ with seed inputs (the corpus is not committed).
# Run from anywhere: sh fuzz/seed.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
for t in envelope_routing render; do
    mkdir -p "$here/corpus/$t"
    cp "$root"/tests/fixtures/crisp-events/*.json "$here/corpus/$t/"
done
# Envelopes that reach every oracle route of relay.fuzz.yaml.
cp "$here"/seeds/envelopes/*.json "$here/corpus/envelope_routing/"
mkdir -p "$here/corpus/config"
cp "$root/relay.yaml" "$here/corpus/config/relay.yaml"
cp "$root/deploy/relay.container.yaml" "$here/corpus/config/relay.container.yaml"
cp "$here/relay.fuzz.yaml" "$here"/seeds/config/*.yaml "$here/corpus/config/"
echo "seeded: $(ls "$here/corpus/envelope_routing" | wc -l) envelopes, $(ls "$here/corpus/config" | wc -l) configs"
