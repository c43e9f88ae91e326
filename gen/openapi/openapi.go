// Package openapi embeds the OpenAPI (Swagger 2.0) document of the admin REST API that
// protoc-gen-openapiv2 writes beside this file. This file is hand-written; buf never touches it.
package openapi

import _ "embed"

// Swagger is the OpenAPI document of the admin REST API (llmproxy.swagger.json), as JSON.
// Callers must not modify it.
//
//go:embed llmproxy.swagger.json
var Swagger []byte
