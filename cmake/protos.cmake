# sb_proto_library(NAME name PROTOS a.proto b.proto ...)
# Generates C++ message and gRPC code for the listed files (paths relative to
# protos/) once, into one static library that every binary links.
function(sb_proto_library)
  cmake_parse_arguments(ARG "" "NAME" "PROTOS" ${ARGN})
  set(out ${CMAKE_BINARY_DIR}/gen)
  set(srcs)
  foreach(proto ${ARG_PROTOS})
    string(REGEX REPLACE "\\.proto$" "" base ${proto})
    set(gen ${out}/${base}.pb.cc ${out}/${base}.pb.h
            ${out}/${base}.grpc.pb.cc ${out}/${base}.grpc.pb.h)
    add_custom_command(
      OUTPUT ${gen}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${out}
      COMMAND protobuf::protoc
        --proto_path=${CMAKE_SOURCE_DIR}/protos
        --cpp_out=${out} --grpc_out=${out}
        --plugin=protoc-gen-grpc=$<TARGET_FILE:gRPC::grpc_cpp_plugin>
        ${CMAKE_SOURCE_DIR}/protos/${proto}
      DEPENDS ${CMAKE_SOURCE_DIR}/protos/${proto}
      COMMENT "protoc ${proto}")
    list(APPEND srcs ${out}/${base}.pb.cc ${out}/${base}.grpc.pb.cc)
  endforeach()
  add_library(${ARG_NAME} STATIC ${srcs})
  target_include_directories(${ARG_NAME} SYSTEM PUBLIC ${out})
  target_link_libraries(${ARG_NAME} PUBLIC protobuf::libprotobuf gRPC::grpc++)
endfunction()
