// Package thresig wraps thresig's C ABI (crates/ffi/include/thresig.h):
// signer handles and sans-IO coordinator handles that take and return JSON
// envelopes (docs/ffi.md).
//
// Link it against the static library: build the crate (`cargo build -p
// thresig-ffi`) and set CGO_LDFLAGS to the path of libthresig_ffi.a.
package thresig

/*
#cgo CFLAGS: -I${SRCDIR}/../../../crates/ffi/include
#cgo LDFLAGS: -lpthread -ldl -lm -lrt
#include <stdlib.h>
#include "thresig.h"
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"unsafe"
)

// ABIVersion is the envelope version this package speaks.
const ABIVersion = 1

// CheckVersion refuses a library of another envelope version.
func CheckVersion() error {
	if v := uint32(C.thresig_abi_version()); v != ABIVersion {
		return fmt.Errorf("thresig library speaks envelope version %d, this package %d; link the matching library", v, ABIVersion)
	}
	return nil
}

// Error is a failure as an error envelope carries it.
type Error struct {
	Code      string `json:"code"`
	Retryable bool   `json:"retryable"`
	Message   string `json:"message"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (retryable %v): %s", e.Code, e.Retryable, e.Message)
}

type response struct {
	Ok    json.RawMessage `json:"ok"`
	Error *Error          `json:"error"`
}

// take copies a buffer the library returned and frees it.
func take(ptr *C.uint8_t, n C.size_t) []byte {
	out := C.GoBytes(unsafe.Pointer(ptr), C.int(n))
	C.thresig_free(ptr, n)
	return out
}

// decode reads a response envelope: its answer, or its error.
func decode(envelope []byte) (json.RawMessage, error) {
	var r response
	if err := json.Unmarshal(envelope, &r); err != nil {
		return nil, fmt.Errorf("not a response envelope: %w", err)
	}
	if r.Error != nil {
		return nil, r.Error
	}
	return r.Ok, nil
}

func request(op string, req interface{}) ([]byte, error) {
	return json.Marshal(map[string]interface{}{"version": ABIVersion, "op": op, "request": req})
}

// Signer is an open signer handle; it may be used from many goroutines.
type Signer struct{ h *C.ThresigSigner }

// Open opens the signer configured in the signer.toml at path.
func Open(path string) (*Signer, error) {
	p := C.CBytes([]byte(path))
	defer C.free(p)
	var h *C.ThresigSigner
	var e *C.uint8_t
	var n C.size_t
	if C.thresig_open((*C.uint8_t)(p), C.size_t(len(path)), &h, &e, &n) != C.THRESIG_OK {
		_, err := decode(take(e, n))
		return nil, err
	}
	return &Signer{h}, nil
}

// CallRaw answers one request envelope with the raw response envelope.
func (s *Signer) CallRaw(envelope []byte) []byte {
	p := C.CBytes(envelope)
	defer C.free(p)
	var out *C.uint8_t
	var n C.size_t
	C.thresig_call(s.h, (*C.uint8_t)(p), C.size_t(len(envelope)), &out, &n)
	return take(out, n)
}

// Relay answers a coordinator's transmitted envelope as sent by the
// member at cluster seat from. The host names from after its own
// authentication of the peer that sent the envelope (its TLS certificate,
// say), never from the peer's bytes: the transmit carries no from, and one
// set in it is overwritten here.
func (s *Signer) Relay(envelope []byte, from int) ([]byte, error) {
	var e map[string]json.RawMessage
	if err := json.Unmarshal(envelope, &e); err != nil {
		return nil, fmt.Errorf("not a request envelope: %w", err)
	}
	var req map[string]json.RawMessage
	if err := json.Unmarshal(e["request"], &req); err != nil {
		return nil, fmt.Errorf("a request envelope without a request object: %w", err)
	}
	req["from"] = json.RawMessage(fmt.Sprint(from))
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	e["request"] = body
	withFrom, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	return s.CallRaw(withFrom), nil
}

// Call runs op with req and returns its answer.
func (s *Signer) Call(op string, req interface{}) (json.RawMessage, error) {
	envelope, err := request(op, req)
	if err != nil {
		return nil, err
	}
	return decode(s.CallRaw(envelope))
}

// Close closes the handle.
func (s *Signer) Close() {
	C.thresig_close(s.h)
	s.h = nil
}

// Coordinator is an open coordinator handle (a DKG relay or a signing run).
type Coordinator struct{ h *C.ThresigCoordinator }

// OpenCoordinator starts a run from its setup (docs/ffi.md).
func OpenCoordinator(setup interface{}) (*Coordinator, error) {
	bytes, err := json.Marshal(setup)
	if err != nil {
		return nil, err
	}
	p := C.CBytes(bytes)
	defer C.free(p)
	var h *C.ThresigCoordinator
	var e *C.uint8_t
	var n C.size_t
	if C.thresig_coordinator_open((*C.uint8_t)(p), C.size_t(len(bytes)), &h, &e, &n) != C.THRESIG_OK {
		_, err := decode(take(e, n))
		return nil, err
	}
	return &Coordinator{h}, nil
}

// Call runs op with req on the coordinator and returns its answer.
func (c *Coordinator) Call(op string, req interface{}) (json.RawMessage, error) {
	envelope, err := request(op, req)
	if err != nil {
		return nil, err
	}
	p := C.CBytes(envelope)
	defer C.free(p)
	var out *C.uint8_t
	var n C.size_t
	C.thresig_coordinator_call(c.h, (*C.uint8_t)(p), C.size_t(len(envelope)), &out, &n)
	return decode(take(out, n))
}

// Close closes the handle.
func (c *Coordinator) Close() {
	C.thresig_coordinator_close(c.h)
	c.h = nil
}
