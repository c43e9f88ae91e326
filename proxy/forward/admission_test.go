package forward

import "testing"

func TestBadPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		bad  bool
	}{
		{"/v1/chat/completions", false},
		{"/", false},
		{"/v1//chat", false},
		{"/v1/.well-known/x", false},
		{"/v1/model..v2/x", false},
		{"/v1/.../x", false},
		{"/v1/a.", false},
		{"/v1/ünïcode", false},
		{"", true},
		{"*", true},
		{"v1/chat", true},
		{"/..", true},
		{"/.", true},
		{"/v1/../x", true},
		{"/v1/./x", true},
		{"/v1/..", true},
		{"/v1/..\\x", true},
		{"/v1\\..\\x", true},
		{"/v1/x\x00", true},
		{"/v1/x\r\ny", true},
		{"/v1/x\x7f", true},
		{"/v1/x\ty", true},
	} {
		if got := badPath(tc.path); got != tc.bad {
			t.Errorf("badPath(%q) = %v; want %v", tc.path, got, tc.bad)
		}
	}
}
