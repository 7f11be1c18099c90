import Foundation
import Hummingbird
import NIOCore

/// A streamed response of JSON lines (`application/x-ndjson`), produced by `produce` as it goes.
///
/// The buffer between producer and HTTP writer holds a few dozen lines; when the client reads
/// slowly the producer waits, so the guest's output is read no faster than the client takes it.
/// A client that disconnects cancels the producer (and so closes its connection to the agent).
enum NDJSONStream {
    static let bufferedLines = 64

    static func response(
        status: HTTPResponse.Status = .ok, contentType: String = "application/x-ndjson",
        _ produce: @escaping @Sendable (_ emit: @escaping @Sendable (ByteBuffer) async throws -> Void) async throws -> Void,
        onError: @escaping @Sendable (Error) -> ByteBuffer?
    ) -> Response {
        let producer = ProducerTask()
        let (stream, writer) = BackpressuredStream.make(buffered: bufferedLines) { producer.cancel() }
        let emit: @Sendable (ByteBuffer) async throws -> Void = { buffer in try await writer.write(buffer) }
        let task = Task {
            do {
                try await produce(emit)
            } catch {
                if !(error is CancellationError), let line = onError(error) { try? await emit(line) }
            }
            writer.finish()
        }
        producer.set(task)
        return Response(status: status, headers: [.contentType: contentType], body: ResponseBody(asyncSequence: stream))
    }

    static func line(_ value: some Encodable) throws -> ByteBuffer {
        var data = try JSONIO.encoder().encode(value)
        data.append(0x0A)
        return ByteBuffer(bytes: data)
    }
}
