export { FaultClient } from "./client.js";
export * from "./gen/faultsvc/v1/fault_pb.js";
export * from "./gen/faultsvc/v1/fault_service_pb.js";
export * from "./gen/faultsvc/v1/options_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";
export { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
