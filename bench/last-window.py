"""Writes a curl config of PUT and PATCH requests to distinct simulator users.

Used by reconcile.sh to measure how long the simulator takes to answer the requests a client
must leave to the last rate-limit window. Arguments: simulator URL, bearer token, number of
PUT, number of PATCH, output directory (holding page1.json and page2.json, the first two list
pages). PUT bodies are the users as read with another title; PATCH replaces the title.
Writes OUT/requests.cfg (and the bodies it names).
"""
import json
import sys

url, token, n_put, n_patch, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
users = [u for p in ("page1", "page2") for u in json.load(open(f"{out}/{p}.json"))["Resources"]]
if len(users) < n_put + n_patch:
    sys.exit(f"bench: the simulator holds {len(users)} users, {n_put + n_patch} needed")


def block(method, uid, body):
    return "\n".join([
        f'url = "{url}/scim/v2/Users/{uid}"',
        f'request = "{method}"',
        f'header = "Authorization: Bearer {token}"',
        'header = "Content-Type: application/scim+json"',
        f'data-binary = "@{body}"',
        'output = "/dev/null"',
        'write-out = "%{http_code}\\n"',
        "",
    ])


blocks = []
for i, u in enumerate(users[:n_put]):
    u.pop("meta", None)
    u["title"] = f"Blast {i}"
    with open(f"{out}/put-{i}.json", "w") as f:
        json.dump(u, f)
    blocks.append(block("PUT", u["id"], f"{out}/put-{i}.json"))
with open(f"{out}/patch.json", "w") as f:
    json.dump({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
               "Operations": [{"op": "replace", "path": "title", "value": "Blast"}]}, f)
for u in users[n_put:n_put + n_patch]:
    blocks.append(block("PATCH", u["id"], f"{out}/patch.json"))
with open(f"{out}/requests.cfg", "w") as f:
    f.write("next\n".join(blocks))
