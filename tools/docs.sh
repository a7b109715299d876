#!/usr/bin/env bash
# Builds the HTML docs of the collection from the plugins' own DOCUMENTATION/EXAMPLES/RETURN
# with antsibull-docs + Sphinx, offline, into docs/build/ (git-ignored), after linting them:
#   1. antsibull-docs lint-collection-docs --plugin-docs: schema, markup (M(), O(), ...) and RST
#      of every plugin, plus docs/docsite/ (links.yml, extra-docs.yml) when present;
#   2. antsibull-docs sphinx-init --use-current, minus intersphinx (it would fetch inventories
#      from docs.ansible.com, and -W turns that warning into a failure), then the generated
#      build.sh (antsibull-docs collection --fail-on-error + sphinx-build -W --keep-going).
# Any warning or error fails the script. Result: docs/build/html/index.html
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=$root/.venv/bin

if [ ! -x "$bin/antsibull-docs" ]; then
  echo "docs: $bin/antsibull-docs is missing; run tools/setup.sh (make setup) first" >&2
  exit 2
fi
export PATH="$bin:$PATH"

namespace=$("$bin/python" -c 'import yaml; print(yaml.safe_load(open("galaxy.yml"))["namespace"])')
name=$("$bin/python" -c 'import yaml; print(yaml.safe_load(open("galaxy.yml"))["name"])')
collection=$namespace.$name

# The theme antsibull-docs' generated conf.py uses (pulls sphinx-rtd-theme, sphinxcontrib-jquery).
if ! "$bin/python" -c 'import sphinx_ansible_theme' 2>/dev/null; then
  echo "docs: sphinx-ansible-theme is not installed in .venv (requirements.txt needs" \
       "sphinx-ansible-theme==0.10.4; then run tools/setup.sh)" >&2
  exit 2
fi

out=$root/docs/build
mkdir -p "$out"

# A private collection view outside the checkout (removed on exit): only this checkout, so
# that a copy installed elsewhere (~/.ansible/collections by molecule, .ansible/ by ansible-lint)
# can never be documented instead.
view=$(mktemp -d "${TMPDIR:-/tmp}/blocklayer-qemu-docs.XXXXXX")
trap 'rm -rf "$view"' EXIT
mkdir -p "$view/ansible_collections/$namespace"
ln -s "$root" "$view/ansible_collections/$namespace/$name"
export ANSIBLE_COLLECTIONS_PATH=$view
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false   # (the variables override ansible.cfg)

start=$SECONDS
echo "docs: linting the collection docs of $collection"
if ! antsibull-docs lint-collection-docs --plugin-docs --validate-collection-refs dependent \
       --check-extra-docs-refs "$root"; then
  echo "docs: FAILED: antsibull-docs lint-collection-docs found the problems above" >&2
  exit 1
fi

echo "docs: generating the Sphinx site"
site=$out/sphinx
rm -rf "$site" "$out/html"
mkdir -p "$site"
chmod 755 "$site"   # antsibull-docs insists on a directory only its owner can write
title="Blocklayer.Qemu"
antsibull-docs sphinx-init --use-current --squash-hierarchy --fail-on-error \
  --dest-dir "$site" --project "$title" --title "$title" --copyright "$title developers" \
  "$collection"
# No internet: drop intersphinx (extension and mapping) from the generated conf.py. The pages
# antsibull-docs generates still :ref: a few labels of the Ansible docs (common_return_values,
# ansible_configuration_settings, ...) and other collections' plugins (M(ansible.builtin.copy));
# those become plain links to docs.ansible.com. Any other unresolved reference (e.g. a broken
# R() or a reference to a missing plugin of this collection) stays a warning, and -W fails it.
cat >> "$site/conf.py" <<PY

# ---- Added by tools/docs.sh (blocklayer.qemu): offline build --------------------------------
extensions = [e for e in extensions if e != 'sphinx.ext.intersphinx']
intersphinx_mapping = {}

_ANSIBLE_DOCS = 'https://docs.ansible.com/projects/ansible/devel/'
_ANSIBLE_LABELS = {
    'ansible_configuration_settings': 'reference_appendices/config.html',
    'common_return_values': 'reference_appendices/common_return_values.html',
    'collections_keyword': 'collections_guide/collections_using_playbooks.html'
                           '#simplifying-module-names-with-the-collections-keyword',
    'list_of_collections': 'collections/index.html',
    'action_plugins': 'plugins/action.html',
    'callback_plugins': 'plugins/callback.html',
    'list_of_callback_plugins': 'collections/index_callback.html',
}
_OWN_PREFIX = 'ansible_collections.${collection}.'


def _ansible_docs_uri(target):
    if target in _ANSIBLE_LABELS:
        return _ANSIBLE_DOCS + _ANSIBLE_LABELS[target]
    parts = target.split('.', 3)
    if len(parts) == 4 and parts[0] == 'ansible_collections' and not target.startswith(_OWN_PREFIX):
        page, _sep, anchor = parts[3].partition('__')
        uri = '%scollections/%s/%s/%s.html' % (_ANSIBLE_DOCS, parts[1], parts[2], page)
        return uri + ('#' + anchor if anchor else '')
    return None


def _resolve_ansible_docs(app, env, node, contnode):
    if node.get('refdomain') != 'std' or node.get('reftype') not in ('ref', 'label'):
        return None
    uri = _ansible_docs_uri(node.get('reftarget', ''))
    if uri is None:
        return None
    from docutils import nodes
    reference = nodes.reference('', '', internal=False, refuri=uri)
    reference += contnode
    return reference


def setup(app):
    app.connect('missing-reference', _resolve_ansible_docs)
PY
if ! bash "$site/build.sh"; then
  echo "docs: FAILED: the Sphinx build reported the errors/warnings above (rst line numbers" \
       "refer to $site/rst/)" >&2
  exit 1
fi
mv "$site/build/html" "$out/html"
echo "docs: OK in $((SECONDS - start)) s: $out/html/index.html"
