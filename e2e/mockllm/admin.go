package mockllm

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
)

// serveAdmin answers the /_mock/ endpoints described in the package documentation.
func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/_mock/health":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			break
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "name": s.name})
		return
	case "/_mock/behaviour", "/_mock/behavior":
		switch r.Method {
		case http.MethodGet:
			writeJSON(w, http.StatusOK, s.Behaviour())
			return
		case http.MethodPost, http.MethodPut:
			data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err != nil {
				return
			}
			b := s.base
			if err := json.Unmarshal(data, &b); err != nil {
				writeJSON(w, http.StatusBadRequest, adminError(err.Error()))
				return
			}
			if err := s.SetBehaviour(b); err != nil {
				writeJSON(w, http.StatusBadRequest, adminError(err.Error()))
				return
			}
			writeJSON(w, http.StatusOK, b)
			return
		case http.MethodDelete:
			s.ResetBehaviour()
			writeJSON(w, http.StatusOK, s.Behaviour())
			return
		}
	case "/_mock/requests":
		switch r.Method {
		case http.MethodGet:
			var since uint64
			if v := r.URL.Query().Get("since"); v != "" {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					writeJSON(w, http.StatusBadRequest, adminError("bad since "+strconv.Quote(v)))
					return
				}
				since = n
			}
			writeJSON(w, http.StatusOK, s.Requests(since))
			return
		case http.MethodDelete:
			s.ClearRequests()
			w.WriteHeader(http.StatusNoContent)
			return
		}
	case "/_mock/fixed":
		if r.Method != http.MethodPost && r.Method != http.MethodGet {
			break
		}
		// The least a net/http server can do for a chat completion: the body read and
		// dropped, one answer built at startup written. The benchmark's floor for anything
		// served through net/http (a cache hit included).
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Type"] = contentTypeHeader("application/json")
		h["Content-Length"] = s.fixedLen
		_, _ = w.Write(s.fixed)
		return
	case "/_mock/stats":
		switch r.Method {
		case http.MethodGet:
			writeJSON(w, http.StatusOK, s.Stats())
			return
		case http.MethodDelete:
			s.ResetStats()
			w.WriteHeader(http.StatusNoContent)
			return
		}
	default:
		writeJSON(w, http.StatusNotFound, adminError("no admin endpoint "+r.URL.Path))
		return
	}
	writeJSON(w, http.StatusMethodNotAllowed, adminError("method "+r.Method+" not allowed on "+r.URL.Path))
}

func adminError(msg string) map[string]map[string]string {
	return map[string]map[string]string{"error": {"message": "mockllm: " + msg, "type": "invalid_request_error"}}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header()["Content-Type"] = jsonCT
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}
