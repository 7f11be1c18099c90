import CladeModel
import Foundation
import Hummingbird
import NIOCore

/// Request bodies in, JSON responses out, with errors a client can act on.
enum JSONIO {
    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    /// Decodes a request body of at most `limit` bytes. Oversized → 413; malformed JSON or a wrong
    /// field → 400 naming the field.
    static func decode<T: Decodable>(_ type: T.Type, from request: Request, limit: Int) async throws -> T {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limit)
        } catch {
            throw APIError(.contentTooLarge, "the request body is larger than \(limit) bytes")
        }
        let data = Data(buffer.readableBytesView)
        guard !data.isEmpty else { throw APIError(.badRequest, "the request needs a JSON body") }
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch let error as DecodingError {
            throw APIError(.badRequest, "invalid request body: \(error.fieldDescription)")
        }
    }

    static func response(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try encoder().encode(value)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func error(_ error: APIError) -> Response {
        let data = (try? encoder().encode(["error": error.message])) ?? Data("{\"error\":\"internal error\"}".utf8)
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retry = error.retryAfter { headers[.retryAfter] = "\(retry)" }
        return Response(status: error.status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func noContent() -> Response { Response(status: .noContent) }
}
