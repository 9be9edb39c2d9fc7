package group

import (
	"bytes"
	"testing"
)

// FuzzGroupMessage: whatever another member sends, reading it and checking
// its shard records either fails or gives records with valid roots and
// replicas in range.
func FuzzGroupMessage(f *testing.F) {
	f.Add([]byte(`{"Op":"sync","Shards":[{"Root":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","Replicas":2,"Updated":"2026-11-28T10:00:00Z"}],"Members":[{"ID":"12D3KooWGYzDagRYAUHecZAoinUxHkTBS8yNqSgHKFvh3KACWWZD","Addrs":["/ip4/127.0.0.1/tcp/4001"]}]}` + "\n"))
	f.Add([]byte(`{"Op":"status","Root":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"}`))
	f.Add([]byte(`{"Shards":[{"Root":"x","Replicas":-1}]}`))
	f.Add([]byte(`{"Status":{"Peer":"p","Chunks":9,"Held":"AQI="}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var req request
		if err := decodeMessage(bytes.NewReader(data), &req); err == nil {
			checkRecords(t, req.Shards)
		}
		var resp response
		if err := decodeMessage(bytes.NewReader(data), &resp); err == nil {
			checkRecords(t, resp.Shards)
		}
	})
}

func checkRecords(t *testing.T, ws []Record) {
	recs, err := parseShards(ws)
	if err != nil {
		return
	}
	for _, r := range recs {
		if !r.Root.Defined() || r.Replicas < 0 || r.Replicas > maxReplicas {
			t.Fatalf("accepted a bad record %+v", r)
		}
	}
}
