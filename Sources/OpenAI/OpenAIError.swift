import Foundation
import Engine
import HTTP

/// The one OpenAI-shaped error of the API: `{"error": {"message", "type", "param", "code"}}`
/// with its HTTP status. Every failure a client can see goes through this type.
public struct OpenAIError: Error, CustomStringConvertible, Equatable {
    public var status: HTTPStatus
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?
    /// Extra response headers (Retry-After, WWW-Authenticate, Allow).
    public var headers: [(String, String)] = []

    public static func == (a: OpenAIError, b: OpenAIError) -> Bool {
        a.status == b.status && a.message == b.message && a.type == b.type && a.param == b.param && a.code == b.code
    }

    public var description: String { "\(status.code) \(type): \(message)" }

    public static func invalid(_ param: String, _ message: String, code: String? = "invalid_value") -> OpenAIError {
        OpenAIError(status: .badRequest, message: message, type: "invalid_request_error", param: param, code: code)
    }

    public static func modelNotFound(_ name: String, available: [String]) -> OpenAIError {
        OpenAIError(status: .notFound,
                    message: "The model '\(name)' does not exist; available models: \(available.joined(separator: ", "))",
                    type: "invalid_request_error", param: "model", code: "model_not_found")
    }

    public static func notFound(_ path: String) -> OpenAIError {
        OpenAIError(status: .notFound, message: "Unknown route \(path); see GET /v1/models, POST /v1/chat/completions, POST /v1/completions, POST /v1/responses, POST /v1/messages",
                    type: "invalid_request_error", param: nil, code: "unknown_route")
    }

    public static func methodNotAllowed(_ method: String, _ path: String, allowed: [String]) -> OpenAIError {
        var e = OpenAIError(status: .methodNotAllowed, message: "\(method) is not allowed on \(path); use \(allowed.joined(separator: " or "))",
                            type: "invalid_request_error", param: nil, code: "method_not_allowed")
        e.headers = [("Allow", allowed.joined(separator: ", "))]
        return e
    }

    public static let unauthorized: OpenAIError = {
        var e = OpenAIError(status: .unauthorized, message: "Missing or invalid API key; send 'Authorization: Bearer YOUR_KEY' or 'x-api-key: YOUR_KEY'",
                            type: "invalid_request_error", param: nil, code: "invalid_api_key")
        e.headers = [("WWW-Authenticate", "Bearer")]
        return e
    }()

    public static let loading = OpenAIError(status: .serviceUnavailable, message: "The model is still loading; retry when GET /health answers 200",
                                            type: "server_error", param: nil, code: "model_loading")

    public static let draining = OpenAIError(status: .serviceUnavailable, message: "The server is shutting down; retry on another replica",
                                             type: "server_error", param: nil, code: "shutting_down")

    /// `error` as the API error a handler answers: itself when it is one, else a 500
    /// `internal_error` naming it.
    public static func wrapping(_ error: Error) -> OpenAIError {
        error as? OpenAIError ?? OpenAIError(status: .internalServerError, message: "internal error: \(error)", type: "server_error",
                                             param: nil, code: "internal_error")
    }

    /// Maps an engine error to its status and OpenAI body (the one place this mapping lives).
    public static func from(_ error: EngineError) -> OpenAIError {
        switch error {
        case .queueFull:
            var e = OpenAIError(status: .tooManyRequests, message: error.description, type: "rate_limit_error", param: nil, code: "queue_full")
            e.headers = [("Retry-After", "1")]
            return e
        case .promptTooLong:
            return OpenAIError(status: .badRequest, message: error.description, type: "invalid_request_error", param: "messages",
                               code: "context_length_exceeded")
        case .emptyPrompt:
            return .invalid("prompt", error.description)
        case .shuttingDown:
            return .draining
        case .modelFailure:
            return OpenAIError(status: .internalServerError, message: error.description, type: "server_error", param: nil, code: "internal_error")
        }
    }

    /// The JSON body (`param` and `code` are null when absent, as OpenAI sends them).
    public var body: Data {
        struct Inner: Encodable {
            var message: String
            var type: String
            @Nullable var param: String?
            @Nullable var code: String?
        }
        struct Envelope: Encodable { var error: Inner }
        return encodeJSON(Envelope(error: Inner(message: message, type: type, param: param, code: code)))
    }

    public var response: HTTPResponse {
        var h = HTTPHeaders()
        h.add(name: "Content-Type", value: "application/json")
        for (k, v) in headers { h.add(name: k, value: v) }
        return HTTPResponse(status: status, headers: h, body: body)
    }
}
