package admin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/manifest"
	"github.com/llmproxy-go/llmproxy/controlplane/store"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	"github.com/llmproxy-go/llmproxy/gen/openapi"
)

// MaxMessageBytes bounds REST request bodies and the gateway's gRPC messages. It is the
// fleet's one size limit (manifest.MaxMessageBytes), so the admin API takes no config that
// proxies could not receive. The gRPC server should accept messages of this size too
// (grpc.MaxRecvMsgSize).
const MaxMessageBytes = manifest.MaxMessageBytes

// HTTPOptions configure NewHTTPHandler.
type HTTPOptions struct {
	// GRPCAddr is the address the gRPC server listens on; the gateway dials it. An
	// unspecified host ("", 0.0.0.0, ::) is replaced by loopback. Required.
	GRPCAddr string
	// GRPCTLS, when set, is how the gateway's connection to GRPCAddr is secured (the gRPC
	// server runs TLS); see tlsconfig.Pinned. Nil: plaintext.
	GRPCTLS *tls.Config
	// Store answers /health. Required.
	Store store.Store
	// Registry is served at /metrics. Nil: /metrics is not served.
	Registry *prometheus.Registry
	// Logger for gateway errors. Nil discards.
	Logger *slog.Logger
	// MaxBodyBytes is the largest REST request body; larger ones answer 413. Zero selects
	// MaxMessageBytes, which the gRPC server must accept too.
	MaxBodyBytes int64
}

// NewHTTPHandler returns the control plane's HTTP handler:
//
//	/api/v1/...            REST façade (grpc-gateway), calling the gRPC server at GRPCAddr;
//	                       bodies over MaxBodyBytes answer 413, query parameters the
//	                       OpenAPI document does not list answer 400 (see restChecks)
//	/api/v1/openapi.json   the OpenAPI document
//	/health                200 when the store answers, 503 otherwise
//	/metrics               Prometheus metrics of Registry
//
// The gRPC connection is lazy and is closed when ctx is done. REST calls carry their
// Authorization header to gRPC, so the gRPC auth interceptor guards both surfaces.
func NewHTTPHandler(ctx context.Context, o HTTPOptions) (http.Handler, error) {
	if o.GRPCAddr == "" || o.Store == nil {
		return nil, errors.New("new http handler: GRPCAddr and Store are required")
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	limit := o.MaxBodyBytes
	if limit <= 0 {
		limit = MaxMessageBytes
	}
	gw := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}),
		runtime.WithErrorHandler(func(ctx context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
			if bodyTooLarge(r) {
				writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", limit), "resource_exhausted", nil, log)
				return
			}
			writeStatusError(w, status.Convert(err), log)
		}),
		runtime.WithRoutingErrorHandler(func(ctx context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
			writeError(w, httpStatus, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path), routingCode(httpStatus), nil, log)
		}),
		runtime.WithForwardResponseOption(forwardHTTPCode),
		runtime.WithOutgoingHeaderMatcher(func(key string) (string, bool) {
			if key == RevisionHeader {
				return "X-Llmproxy-Revision", true
			}
			return "", false
		}),
	)
	target := LoopbackTarget(o.GRPCAddr)
	creds := insecure.NewCredentials()
	if o.GRPCTLS != nil {
		creds = credentials.NewTLS(o.GRPCTLS)
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
	}
	if err := adminv1.RegisterAdminServiceHandlerFromEndpoint(ctx, gw, target, dial); err != nil {
		return nil, fmt.Errorf("register rest gateway: %w", err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapi.Swagger)
	})
	mux.HandleFunc("GET /health", healthHandler(o.Store))
	if o.Registry != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{Registry: o.Registry}))
	}
	checked, err := newRESTChecks(gw, limit, openapi.Swagger, log)
	if err != nil {
		return nil, fmt.Errorf("new http handler: %w", err)
	}
	mux.Handle("/", checked)
	return mux, nil
}

// LoopbackTarget returns addr with an unspecified host replaced by the loopback address of
// the same family, so the gateway can dial the gRPC listener.
func LoopbackTarget(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	ip := net.ParseIP(host)
	switch {
	case host == "":
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified() && ip.To4() == nil:
		host = "::1"
	case ip != nil && ip.IsUnspecified():
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// forwardHTTPCode turns the x-http-code header metadata into the response status (201 on
// create, 204 on delete). A 204 answer has no body: net/http refuses to write one and the
// gateway ignores that refusal.
func forwardHTTPCode(ctx context.Context, w http.ResponseWriter, _ proto.Message) error {
	md, ok := runtime.ServerMetadataFromContext(ctx)
	if !ok {
		return nil
	}
	vals := md.HeaderMD.Get(HTTPCodeHeader)
	if len(vals) == 0 {
		return nil
	}
	code, err := strconv.Atoi(vals[0])
	if err != nil || code < 200 || code > 299 {
		return nil
	}
	if code == http.StatusNoContent {
		w.Header().Del("Content-Type")
	}
	w.WriteHeader(code)
	return nil
}

func healthHandler(st store.Store) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		rev, _, err := st.Load(ctx)
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]string{"status": "unavailable", "error": "store: " + err.Error()})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "ok", "revision": strconv.FormatUint(rev, 10)})
	}
}

// HTTPStatus maps a gRPC code to the REST façade's HTTP status.
func HTTPStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.InvalidArgument, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted, codes.FailedPrecondition:
		return http.StatusConflict
	case codes.ResourceExhausted:
		// A message or config over the size limit; the admin API has no quotas.
		return http.StatusRequestEntityTooLarge
	case codes.Canceled:
		return 499
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	default:
		return http.StatusInternalServerError
	}
}

// errorBody is the JSON error of the REST façade, OpenAI-style.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	// Code is the gRPC status code in snake case, e.g. "already_exists".
	Code string `json:"code"`
	// Fields lists the offending fields when the server named them.
	Fields []fieldViolation `json:"fields,omitempty"`
}

type fieldViolation struct {
	Field       string `json:"field"`
	Description string `json:"description"`
}

func writeStatusError(w http.ResponseWriter, st *status.Status, log *slog.Logger) {
	var fields []fieldViolation
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, fieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		}
	}
	writeError(w, HTTPStatus(st.Code()), cleanMessage(st.Message()), snakeCode(st.Code()), fields, log)
}

func writeError(w http.ResponseWriter, httpStatus int, msg, code string, fields []fieldViolation, log *slog.Logger) {
	h := w.Header()
	h.Del("Trailer")
	h.Del("Transfer-Encoding")
	h.Set("Content-Type", "application/json")
	if httpStatus == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", "Bearer")
	}
	w.WriteHeader(httpStatus)
	body := errorBody{Error: errorDetail{Message: msg, Type: errorType(httpStatus), Code: code, Fields: fields}}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(body); err != nil {
		log.Debug("write rest error", "err", err)
	}
}

// cleanMessage makes protojson decode errors ("proto: (line 1:9): unknown field \"x\"")
// readable.
func cleanMessage(msg string) string {
	if rest, ok := strings.CutPrefix(msg, "proto:"); ok {
		return "invalid JSON body: " + strings.TrimSpace(rest)
	}
	return msg
}

func errorType(httpStatus int) string {
	switch httpStatus {
	case http.StatusBadRequest:
		return "invalid_request_error"
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusMethodNotAllowed:
		return "invalid_request_error"
	case http.StatusConflict:
		return "conflict_error"
	case http.StatusRequestEntityTooLarge:
		return "invalid_request_error"
	case http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return "unavailable_error"
	default:
		return "server_error"
	}
}

func routingCode(httpStatus int) string {
	switch httpStatus {
	case http.StatusNotFound:
		return "not_found"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	default:
		return "invalid_argument"
	}
}

// snakeCode spells a gRPC code in snake case: AlreadyExists → "already_exists".
func snakeCode(c codes.Code) string {
	if c == codes.OK {
		return "ok"
	}
	s := c.String()
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
