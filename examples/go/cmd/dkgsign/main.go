// Command dkgsign runs a 2-of-3 DKG and a Taproot signature with three
// signer handles in one process, relaying the coordinator's requests.
//
// Usage: dkgsign WALLET CONFIG1 CONFIG2 CONFIG3
//
// It prints the signature of the one input, the message signed, the key
// and the PSBT ("signature HEX", "message HEX", "key HEX", "psbt BASE64").
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"thresig.example/ffi/thresig"
)

type transmit struct {
	To       int             `json:"to"`
	Tag      uint64          `json:"tag"`
	Envelope json.RawMessage `json:"envelope"`
}

type event struct {
	Type       string   `json:"type"`
	Message    string   `json:"message"`
	OutputKey  string   `json:"output_key"`
	Signatures []string `json:"signatures"`
	Messages   []string `json:"messages"`
}

func check(err error, what string) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "dkgsign: %s: %v\n", what, err)
		os.Exit(1)
	}
}

// drive relays the coordinator's requests to the members until an event
// of type done.
func drive(c *thresig.Coordinator, members []*thresig.Signer, done string, nowMs uint64) event {
	for round := 0; round < 1000; round++ {
		moved := false
		for {
			raw, err := c.Call("poll_transmit", nil)
			check(err, "poll_transmit")
			if string(raw) == "null" {
				break
			}
			moved = true
			var t transmit
			check(json.Unmarshal(raw, &t), "a transmit")
			// Member 1 coordinates; a networked host names the peer it
			// authenticated here.
			response, err := members[t.To-1].Relay(t.Envelope, 1)
			check(err, "relay")
			_, err = c.Call("handle_reply", map[string]interface{}{
				"from": t.To, "tag": t.Tag, "now_ms": nowMs, "response": json.RawMessage(response),
			})
			check(err, "handle_reply")
		}
		for {
			raw, err := c.Call("poll_event", nil)
			check(err, "poll_event")
			if string(raw) == "null" {
				break
			}
			var e event
			check(json.Unmarshal(raw, &e), "an event")
			if e.Type == "failed" {
				check(fmt.Errorf("%s", e.Message), "the run")
			}
			if e.Type == done {
				return e
			}
		}
		if !moved {
			check(fmt.Errorf("idle without a %s event", done), "the run")
		}
	}
	check(fmt.Errorf("no %s event", done), "the run")
	return event{}
}

func main() {
	if len(os.Args) != 5 {
		check(fmt.Errorf("usage: dkgsign WALLET CONFIG1 CONFIG2 CONFIG3"), "arguments")
	}
	wallet, configs := os.Args[1], os.Args[2:]
	check(thresig.CheckVersion(), "ABI version")
	var members []*thresig.Signer
	for _, path := range configs {
		s, err := thresig.Open(path)
		check(err, "open "+path)
		defer s.Close()
		members = append(members, s)
	}

	relay, err := thresig.OpenCoordinator(map[string]interface{}{"kind": "dkg", "config_path": configs[0], "wallet": wallet})
	check(err, "DKG relay")
	dkg := drive(relay, members, "dkg_done", 0)
	relay.Close()

	var key struct{ Key string }
	raw, err := members[0].Call("wallet_key", map[string]interface{}{"from": 1, "wallet": wallet})
	check(err, "wallet_key")
	check(json.Unmarshal(raw, &key), "wallet_key")
	var status struct {
		Epoch     uint64 `json:"epoch"`
		OutputKey string `json:"output_key"`
	}
	raw, err = members[0].Call("status", map[string]interface{}{"from": 1, "wallet": wallet})
	check(err, "status")
	check(json.Unmarshal(raw, &status), "status")
	if status.OutputKey != dkg.OutputKey {
		check(fmt.Errorf("the DKG's key %s is not the wallet's %s", dkg.OutputKey, status.OutputKey), "DKG")
	}

	script := "5120" + status.OutputKey
	var built struct{ Psbt string }
	raw, err = members[0].Call("psbt_build", map[string]interface{}{
		"wallet":  wallet,
		"inputs":  []interface{}{map[string]interface{}{"txid": "4444444444444444444444444444444444444444444444444444444444444444", "vout": 0, "value_sat": 80000, "script_pubkey": script}},
		"outputs": []interface{}{map[string]interface{}{"script_pubkey": script, "value_sat": 79000}},
	})
	check(err, "psbt_build")
	check(json.Unmarshal(raw, &built), "psbt_build")

	run, err := thresig.OpenCoordinator(map[string]interface{}{
		"kind": "sign", "config_path": configs[0], "wallet": wallet, "key": key.Key,
		"epoch": status.Epoch, "psbt": built.Psbt, "now_ms": 1000,
	})
	check(err, "signing run")
	signed := drive(run, members, "done", 1000)
	run.Close()
	fmt.Printf("signature %s\nmessage %s\nkey %s\npsbt %s\n", signed.Signatures[0], signed.Messages[0], signed.OutputKey, built.Psbt)
}
