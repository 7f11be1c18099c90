import Foundation
import Logging
import NIOCore
import NIOEmbedded
import SwiftProtobuf
import Testing

@testable import CladeShim

/// ttrpc's wire format and a real server and client over a unix socket.
@Suite struct TTRPCTests {
    @Test func framesRoundTripThroughTheCodec() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(TTRPCFrameDecoder()))
        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(TTRPCFrameEncoder()))
        let frame = TTRPCFrame(streamID: 7, kind: .response, flags: 1, payload: Array("hello".utf8))
        try channel.writeOutbound(frame)
        let bytes = try #require(try channel.readOutbound(as: ByteBuffer.self))
        // 10-byte big-endian header: length, stream id, type, flags.
        #expect(Array(bytes.readableBytesView.prefix(10)) == [0, 0, 0, 5, 0, 0, 0, 7, 2, 1])
        // Split across two reads, as a socket may deliver it.
        try channel.writeInbound(bytes.getSlice(at: bytes.readerIndex, length: 6)!)
        #expect(try channel.readInbound(as: TTRPCFrame.self) == nil)
        try channel.writeInbound(bytes.getSlice(at: bytes.readerIndex + 6, length: bytes.readableBytes - 6)!)
        #expect(try channel.readInbound(as: TTRPCFrame.self) == frame)
    }

    @Test func anOversizedFrameClosesTheConnectionBeforeItsPayloadIsRead() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(TTRPCFrameDecoder()))
        var header = ByteBuffer()
        header.writeInteger(UInt32(TTRPCFrame.maxPayload + 1))
        header.writeInteger(UInt32(1))
        header.writeInteger(UInt8(1))
        header.writeInteger(UInt8(0))
        #expect(throws: TTRPCError.self) { try channel.writeInbound(header) }
    }

    @Test func requestsAreAnsweredOutOfOrderAndUnknownMethodsAreUnimplemented() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ttrpc-\(UInt32.random(in: 0...UInt32.max)).sock").path
        let gate = Gate()
        var router = TTRPCRouter()
        // Wait blocks until Start has run, as containerd's Wait does on one connection.
        router.add("svc", "Wait") { (request: Containerd_Task_V2_WaitRequest, _) in
            await gate.wait()
            var response = Containerd_Task_V2_WaitResponse()
            response.exitStatus = 42
            return response
        }
        router.add("svc", "Start") { (request: Containerd_Task_V2_StartRequest, context) in
            await gate.open()
            var response = Containerd_Task_V2_StartResponse()
            response.pid = UInt32(request.id.count) + (context.metadata["containerd-namespace-ttrpc"] == "ns" ? 100 : 0)
            return response
        }
        router.add("svc", "Fail") { (_: Containerd_Task_V2_StateRequest, _) -> Containerd_Task_V2_StateResponse in
            throw TTRPCError.status(.notFound, "no such task")
        }
        let server = try await TTRPCServer.binding(path: path, router: router, logger: Logger(label: "test"))
        let client = try await TTRPCClient.connect(path: path)
        defer { unlink(path) }
        async let waited: Containerd_Task_V2_WaitResponse = client.call("svc", "Wait", Containerd_Task_V2_WaitRequest())
        var start = Containerd_Task_V2_StartRequest()
        start.id = "abc"
        let started: Containerd_Task_V2_StartResponse = try await client.call("svc", "Start", start, metadata: ["containerd-namespace-ttrpc": "ns"])
        #expect(started.pid == 103)
        #expect(try await waited.exitStatus == 42)
        await #expect {
            let _: Containerd_Task_V2_StateResponse = try await client.call("svc", "Fail", Containerd_Task_V2_StateRequest())
        } throws: { error in
            guard case TTRPCError.status(.notFound, let message) = error else { return false }
            return message == "no such task"
        }
        await #expect {
            let _: Google_Protobuf_Empty = try await client.call("containerd.task.v2.Task", "Checkpointz", Google_Protobuf_Empty())
        } throws: { error in
            guard case TTRPCError.status(.unimplemented, _) = error else { return false }
            return true
        }
        await client.close()
        await server.close()
    }
}

/// Opens once; every waiter then goes on.
actor Gate {
    private var isOpen = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func wait() async {
        if isOpen { return }
        await withCheckedContinuation { waiters.append($0) }
    }

    func open() {
        isOpen = true
        for waiter in waiters { waiter.resume() }
        waiters = []
    }
}
